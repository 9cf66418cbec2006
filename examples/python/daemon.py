# expect: ok
# stdout: parent exits now
#
# A daemon: fork, setsid (leave the run's session), fork again, point stdio at
# /dev/null, and sleep forever. The parent exits 0 at once (status ok); the
# sandbox must still kill the daemon when the run ends.
import os
import time

child = os.fork()
if child == 0:
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the session leader goes; its child is the daemon
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        time.sleep(60)

os.waitpid(child, 0)
print("daemon started; parent exits now")
