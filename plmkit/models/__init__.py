"""Encoders, heads and plmkit's own model types.

Shape letters, one meaning each (every file here lists those it uses; shape comments read `# (B, T, H)`):

    B   batch: the rows of a batch
    T   tokens: subword positions of a row, the encoder's sequence axis
    U   units: the characters or words a tagger labels (each read at its first subword)
    P   positions of many items laid end to end (the feature cache's kept positions)
    H   hidden: an encoder's output width (ELMo: [forward; backward], so one direction is H/2)
    N   layers of an encoder; with the embedding output first its hidden states are N+1
    E   embedding size: an embedding table's width (ALBERT's factorised E < H); E_c ELMo's characters'
    F   feature / feed-forward width: a transformer's FFN (intermediate size), ELMo's character-CNN features
    V   vocabulary: rows of the word embedding, logits over it
    K   tags of a tagging scheme (CRF transitions are K x K)
    C   classes of a classifier (num_labels)
    S   span lengths 1..max_len that span masking draws from
    I   distinct token ids of a batch (ELMo's character CNN encodes each once)
    W   characters per token (ELMo's max_token_chars)
    D   a width of a head's own, named where it is used (ESIM's projection, a bigram embedding, an LSTM's input)
    X'  (a primed letter) the width a layer turns X into, named where it is used (D', H': a BiLSTM's output)

Letters are counts; a product or a fraction of them is written out (2H: [mean; max]; H/2; N+1).
"""
