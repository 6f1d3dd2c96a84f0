"""The corpus presets translate the awd-lstm-lm README's command lines into lstmlm's
fields, and each is a valid config (a mistake such as tying the adaptive softmax would
stop `validate`)."""

from lstmlm.config.overrides import build


def test_awd_enwik8_is_the_readme_command_line():
    cfg = build("awd-enwik8", {"corpus": "enwik8"})  # validated
    m, t = cfg.model, cfg.train
    # --nlayers 3 --emsize 400 --nhid 1840 (tied: the last layer is the embedding size)
    assert m.layer_sizes == (1840, 1840, 400) and m.emb_size == 400 and m.tie_weights
    # --dropoute 0 --dropouti 0.1 --dropouth 0.1 --dropout 0.4 --wdrop 0.2
    assert (m.dropout_e, m.dropout_i, m.dropout_h, m.dropout_o, m.wdrop) == (0, 0.1, 0.1, 0.4, 0.2)
    # --optimizer adam --lr 1e-3 --wdecay 1.2e-6 --alpha 0 --beta 0 --bptt 200 --batch_size 128
    assert (t.optimizer, t.lr, t.weight_decay, t.alpha, t.beta) == ("adam", 1e-3, 1.2e-6, 0, 0)
    assert (t.bptt, t.variable_bptt, t.batch_size, t.epochs) == (200, True, 128, 50)
    assert cfg.data.level == "char"


def test_awd_wt103_is_the_qrnn_recipe_on_an_lstm_with_adaptive_softmax():
    cfg = build("awd-wt103", {"corpus": "wikitext-103"})
    m, t = cfg.model, cfg.train
    # --nlayers 4 --emsize 400 --nhid 2500, split cross-entropy at 2800/20000/76000
    assert m.rnn == "lstm" and m.layer_sizes == (2500, 2500, 2500, 400) and m.emb_size == 400
    assert m.softmax == "adaptive" and m.cutoffs == (2800, 20000, 76000) and not m.tie_weights
    # --dropoute 0 --dropouti 0.1 --dropouth 0.1 --dropout 0.1 --wdrop 0
    assert (m.dropout_e, m.dropout_i, m.dropout_h, m.dropout_o, m.wdrop) == (0, 0.1, 0.1, 0.1, 0)
    # --optimizer adam --lr 1e-3 --wdecay 0 --bptt 140 --batch_size 60 --epochs 14 --when 12
    assert (t.optimizer, t.lr, t.weight_decay, t.bptt, t.batch_size) == ("adam", 1e-3, 0, 140, 60)
    assert (t.epochs, t.lr_schedule, t.lr_decay, t.decay_after) == (14, "epoch", 10.0, 12)
    assert cfg.data.level == "word"
