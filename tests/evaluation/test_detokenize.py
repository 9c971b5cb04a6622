"""The WikiText and PTB de-tokenizers on known strings."""
from gpt2.evaluation import detokenize


def test_wikitext_joins_numbers_punctuation_brackets_quotes_and_headings():
    text = (' = Valkyria Chronicles III = \n \n Senjō no Valkyria 3 : Unrecorded ( Japanese : 戦場 , lit . '
            'Valkyria 3 ) , known as " Valkyria III " , a role @-@ playing game . It sold 1 @,@ 000 copies '
            "at 5 @.@ 2 % , the team 's best . \n \n = = Gameplay = = \n")
    assert detokenize.detokenize(text, 'wikitext') == (
        '= Valkyria Chronicles III =\nSenjō no Valkyria 3: Unrecorded (Japanese: 戦場, lit. Valkyria 3), known as '
        '"Valkyria III", a role-playing game. It sold 1,000 copies at 5.2 %, the team\'s best.\n== Gameplay ==\n')


def test_wikitext_leaves_ordinary_text_alone():
    text = 'A sentence, as written (with brackets) and "quotes"; 1,000 and 5.2 stay.\n'
    assert detokenize.detokenize(text, 'wikitext') == text


def test_ptb_joins_clitics_and_keeps_n_and_unk():
    text = "we do n't know what it 's worth or who 've <unk> N shares\n"
    assert detokenize.detokenize(text, 'ptb') == "we don't know what it's worth or who've <unk> N shares\n"


def test_none_changes_nothing():
    text = " = = a , b = = \n"
    assert detokenize.detokenize(text, 'none') == text
