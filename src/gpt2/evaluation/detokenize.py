"""Undo the tokenised spelling of two benchmark corpora, so that GPT-2 sees text as people write it.

WikiText (Merity et al., 2016) and the Penn Treebank of Mikolov et al. (2010) are distributed with every token
separated by spaces. GPT-2's paper scored them through "invertible de-tokenizers" that it did not publish. These
rules are written from what the corpora's own descriptions and lm-evaluation-harness's WikiText task document:

WikiText: a space on each side of punctuation (`word , word`), numbers split at their separators with `@`
marks (`1 @,@ 000`, `1 @.@ 5`, `well @-@ known`), brackets and quotes padded inside (`( text )`, `" text "`),
headings written `= = Title = =`, and apostrophes split off (`John 's`).

PTB (Mikolov's version): lower case, no punctuation but apostrophes, numbers as `N`, rare words as `<unk>`, and
clitics split off (`do n't`, `it 's`). Its only invertible spelling is the clitics: `N` and `<unk>` stay (no
rule can bring back the number or the word).

Each rule works within a line, but for the blank lines between paragraphs, which WikiText's rule joins: a file
can be de-tokenized a block at a time if each block ends with a line break and the next starts a line of text
(see LINE_START).
"""
import re

WIKITEXT_RULES = [
    # numbers: "1 @,@ 000" -> "1,000", "5 @.@ 2" -> "5.2", "well @-@ known" -> "well-known"
    (re.compile(r' @([-,.])@ '), r'\1'),
    # punctuation that follows a word: "word , word" -> "word, word"
    (re.compile(r' ([,.:;!?])(?= |$)', re.M), r'\1'),
    # padded brackets and quotes: "( text )" -> "(text)", '" text "' -> '"text"'
    (re.compile(r'\( ([^()\n]*?) \)'), r'(\1)'),
    (re.compile(r'\[ ([^\[\]\n]*?) \]'), r'[\1]'),
    (re.compile(r'\{ ([^{}\n]*?) \}'), r'{\1}'),
    (re.compile(r'" ([^"\n]*?) "'), r'"\1"'),
    # headings: "= = Title = =" -> "== Title =="
    (re.compile(r'(?<![^ \n])=( =)+(?= |$)', re.M), lambda m: m.group(0).replace(' ', '')),
    # clitics and possessives: "John 's" -> "John's", "dogs '" -> "dogs'"
    (re.compile(r" ('s|'re|'ve|'ll|'d|'m|n't)\b", re.I), r'\1'),
    (re.compile(r"(?<=s) '(?= )"), "'"),
    # a unit sign set off on both sides: "5 ° C" -> "5° C"
    (re.compile(' \N{DEGREE SIGN} '), '\N{DEGREE SIGN} '),
    # the spaces around each line, then the blank lines between paragraphs
    (re.compile(r'^ +| +$', re.M), ''),
    (re.compile(r'\n\n+'), '\n'),
]

PTB_RULES = [
    (re.compile(r" ('s|'re|'ve|'ll|'d|'m|n't)\b"), r'\1'),
]

# Where a block of text may end for detokenize(): after a line break, before a character that is no space.
LINE_START = re.compile(r'(?<=\n)[^\s]')

DETOKENIZERS = {'none': [], 'wikitext': WIKITEXT_RULES, 'ptb': PTB_RULES}


def detokenize(text, name):
    """text spelled as the corpus `name` spells it ('none', 'wikitext' or 'ptb') -> text as written."""
    for pattern, replacement in DETOKENIZERS[name]:
        text = pattern.sub(replacement, text)
    return text
