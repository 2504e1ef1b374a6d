"""The synthetic spoken-QA corpus: text templates with answer keys, TTS build, manifests."""
