# python3 bench/stop_burst.py PORT MASTER_PID N (scripts/stop_burst.sh runs it): N clients connect
# at once, each sends one HTTP/1.0 request and reads the answer; once N/2 have connected, the master
# gets SIGTERM (a graceful stop). Prints how many were answered, refused (the listener was closed:
# they never connected), reset, or failed otherwise.
import asyncio, os, signal, sys, collections
port, master, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
counts = collections.Counter(); connected = 0; sent_term = False
async def one():
    global connected, sent_term
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        counts["refused"] += 1; return
    except OSError as e:
        counts[f"connect {e.errno}"] += 1; return
    connected += 1
    if connected >= n // 2 and not sent_term:
        sent_term = True; os.kill(master, signal.SIGTERM)
    try:
        w.write(b"GET / HTTP/1.0\r\n\r\n"); await w.drain()
        data = await asyncio.wait_for(r.read(), 30)
        counts["answered" if data.startswith(b"HTTP/1.1 200") else "empty"] += 1
    except ConnectionResetError:
        counts["reset"] += 1
    except Exception as e:
        counts[type(e).__name__] += 1
    finally:
        w.close()
async def main():
    await asyncio.gather(*(one() for _ in range(n)))
    print(dict(counts))
asyncio.run(main())
