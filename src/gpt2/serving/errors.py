"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, with the HTTP status that goes with
them, so that the `openai` client raises its own classes (BadRequestError on 400, NotFoundError on 404, ...)."""

TYPES = {400: 'invalid_request_error', 401: 'authentication_error', 404: 'not_found_error',
         413: 'invalid_request_error', 500: 'server_error', 503: 'server_overloaded'}


class APIError(Exception):
    """A request the server answers with an error: status, message, and the parameter it concerns (or None)."""

    def __init__(self, status, message, param=None, *, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self):
        return {'error': {'message': self.message, 'type': TYPES.get(self.status, 'invalid_request_error'),
                          'param': self.param, 'code': self.code}}


def bad(message, param=None):
    """A 400 for a parameter of the wrong type or out of range."""
    return APIError(400, message, param)
