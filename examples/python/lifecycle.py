"""The whole token lifecycle against tokend with redis-py.

    python3 examples/python/lifecycle.py [host] [port]

with redis-py installed (`pip install redis`), or with the virtualenv
scripts/setup.sh makes: `.venv/bin/python examples/python/lifecycle.py`.

Generates tokens, acquires one with a lease and keeps it alive in a loop,
gives it back, lets a lease and the lifetimes run out, and prints the
expiry notifications tokend publishes as they come. Exits 0 once it saw
every event it waited for.
"""
import sys
import threading
import time

import redis

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
port = int(sys.argv[2]) if len(sys.argv) > 2 else 6380
pool = "example-py"
r = redis.Redis(host=host, port=port, decode_responses=True)

# Expiry notifications: tokend publishes them itself (the default
# notify-keyspace-events includes x and l), like Redis's keyevent channels.
events = []
seen = threading.Condition()
pubsub = r.pubsub()
pubsub.subscribe("__keyevent@0__:expired", "__keyevent@0__:leaseexpired")


def listen():
    for m in pubsub.listen():
        if m["type"] == "message":
            with seen:
                events.append((m["channel"].split(":")[-1], m["data"]))
                seen.notify_all()


threading.Thread(target=listen, daemon=True).start()
time.sleep(0.1)  # let the subscription settle

# Three tokens that live 1.5 s unless kept alive.
tokens = r.execute_command("TOKEN.GEN", pool, "PX", 1500, "COUNT", 3)
print("generated", tokens)

# Acquire one with a 400 ms lease and keep it alive for a second.
token = r.execute_command("TOKEN.ACQUIRE", pool, "PX", 400)
print("acquired", token)
for _ in range(5):
    time.sleep(0.2)
    left = r.execute_command("TOKEN.KEEPALIVE", pool, token)
    print("kept alive; lifetime left (ms):", left)
info = r.execute_command("TOKEN.INFO", pool, token)
print("info", info)
r.execute_command("TOKEN.UNBLOCK", pool, token)
print("unblocked", token)

# Acquire another and let its lease run out: tokend frees it on time.
other = r.execute_command("TOKEN.ACQUIRE", pool, "PX", 100)
print("acquired", other, "and let its lease end")


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    with seen:
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                return False
            seen.wait(left)
    return True


ok = wait_for(lambda: ("leaseexpired", f"{pool}:{other}") in events)
print("leaseexpired event for", other, "received" if ok else "MISSING")
# Every token's lifetime ends (nobody keeps them alive any more).
ok2 = wait_for(lambda: sum(1 for e in events if e[0] == "expired" and e[1].startswith(pool + ":")) >= 3)
print("expired events:", [e[1] for e in events if e[0] == "expired"])
print("stats", r.execute_command("TOKEN.STATS", pool))
pubsub.close()
sys.exit(0 if ok and ok2 else 1)
