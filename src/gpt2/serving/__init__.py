"""The model server (src/server.py): OpenAI's completions API over a decoding loop that requests join and leave.

app.py is the HTTP side (Starlette routes, run on uvicorn's event loop), parsing.py reads and checks a request
body, errors.py is OpenAI's error shape, responses.py the bodies and streamed chunks of the answers. engine.py
holds the threads that own the TensorFlow session: slots.py is the decoding loop's graph, scheduler.py its host
side (which rows decode at each step), choices.py what a finished row answers."""
