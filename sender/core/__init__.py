"""The domain: page schema, retry policy, rate-limit math, the contact loop and the page
handler. No I/O here: everything outside the process sits behind `ports.py`."""
