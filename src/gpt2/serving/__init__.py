"""The model server (src/server.py): OpenAI's completions API over the sampling engine.

app.py is the HTTP side (Starlette routes, run on uvicorn's event loop), parsing.py reads and checks a request
body, errors.py is OpenAI's error shape, engine.py the one thread that owns the TensorFlow session and runs the
batches, responses.py the bodies and streamed chunks of the answers."""
