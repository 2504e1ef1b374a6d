"""LightningModules, one per trainable stage (tokenizer, vocoder, pretrain, SFT, DPO).

Each is a thin layer over a plain-PyTorch model in ``aqaa``. None has landed yet: the
corpus stage needs no training. See the README's status table.
"""
