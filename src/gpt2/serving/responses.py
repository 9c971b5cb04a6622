"""The answers' bodies: a completion, its usage, and the chunks of a streamed one (server-sent events).

A streamed choice sends its text as tokens are drawn, less what might yet turn out to be a stop string (a tail of
the text that begins one) and less a character whose UTF-8 bytes are not all drawn yet: what is sent is never
taken back, and all the chunks of a choice add up to the text of the same request unstreamed."""
import codecs
import dataclasses
import json

from gpt2.sampling import stops as stops_lib


def usage(prompts, choices):
    """OpenAI's usage: each prompt's tokens once (however many choices it has), every choice's drawn tokens."""
    prompt = sum(len(p) for p in prompts)
    completion = sum(c.completion_tokens for c in choices)
    return {'prompt_tokens': prompt, 'completion_tokens': completion, 'total_tokens': prompt + completion}


def completion(ident, created, model, request, choices):
    """The body of a completion that is not streamed."""
    return {'id': ident, 'object': 'text_completion', 'created': created, 'model': model,
            'choices': [{'index': c.index, 'text': c.text, 'logprobs': c.logprobs,
                         'finish_reason': c.finish_reason} for c in choices],
            'usage': usage(request.prompts, choices)}


def event(data):
    """One server-sent event: `data: {json}` and a blank line."""
    return f'data: {json.dumps(data)}\n\n'


DONE = 'data: [DONE]\n\n'


@dataclasses.dataclass
class Header:
    ident: str
    created: int
    model: str
    include_usage: bool

    def chunk(self, index, text, finish_reason=None, logprobs=None):
        body = {'id': self.ident, 'object': 'text_completion', 'created': self.created, 'model': self.model,
                'choices': [{'index': index, 'text': text, 'logprobs': logprobs, 'finish_reason': finish_reason}]}
        if self.include_usage:
            body['usage'] = None
        return event(body)

    def usage_chunk(self, request, choices):
        return event({'id': self.ident, 'object': 'text_completion', 'created': self.created, 'model': self.model,
                      'choices': [], 'usage': usage(request.prompts, choices)})


class TextStream:
    """One choice's text as its tokens arrive -> the new text that is safe to send."""

    def __init__(self, enc, stops, prefix=''):
        self.enc = enc
        self.stops = stops
        self.decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
        self.text = ''  # the completion's text so far (characters whose bytes are all here)
        self.sent = 0  # characters of it sent
        self.stopped = False
        self.prefix = prefix  # echo: the prompt's text, sent first

    def add(self, token):
        """A drawn token -> the text to send now ('' for none)."""
        if self.stopped:
            return ''
        self.text += self.decoder.decode(self.enc.decode_bytes([token]))
        cut = stops_lib.cut(self.text, self.stops)
        if len(cut) < len(self.text):  # a stop string: nothing after it is sent
            self.stopped = True
            return self.send(len(cut))
        return self.send(len(self.text) - held(self.text, self.stops))

    def send(self, upto):
        new = self.text[self.sent:upto]
        self.sent = max(self.sent, upto)
        return new

    def rest(self, final):
        """The choice's final text (an echoed prompt first) -> what is left to send of it."""
        return final[len(self.prefix) + self.sent:]


def held(text, stops):
    """How many characters at the end of text begin a stop string (so may yet become one)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest
