# expect: ok
# options: --timeout 5
# stdout: fork() failed after
#
# A fork bomb made to end: every process forks in a loop and each child joins
# in, until the sandbox's process limit (64 by default) makes os.fork() raise.
# The first process reports how many children it made and exits 0 (status ok);
# the engine kills the rest when the run ends. --timeout 5 is a backstop.
import os
import signal

first = os.getpid()
children = 0
while True:
    try:
        pid = os.fork()
    except OSError as e:  # BlockingIOError: Resource temporarily unavailable
        error = e
        break
    if pid > 0:
        children += 1
    # pid == 0: a new child, which keeps forking too

if os.getpid() != first:
    while True:
        signal.pause()  # hold the process slot until the run ends
print(f"fork() failed after {children} children of the first process: {error.strerror}")
