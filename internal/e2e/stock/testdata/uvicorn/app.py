# A stock ASGI app, as a new user writes one: no socket activation code, no
# drain code. uvicorn serves it from the socket agentd passes as fd 3
# (Procfile: web: python3 -m uvicorn app:app --fd 3) and drains the stock
# way on SIGTERM. stock_test.go deploys it under new-connection POST load.
import os

BODY = ("ok %s %s\n" % (os.environ.get("AGENTD_RELEASE", "?"), os.getpid())).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Read the whole request body before answering, as a real handler does.
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
    })
    await send({"type": "http.response.body", "body": BODY})
