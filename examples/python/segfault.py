# expect: signaled
# stdout: reading address 0
# message: SIGSEGV
#
# Python itself can crash too: reading memory at address 0 through ctypes
# raises SIGSEGV in the interpreter, so the status is signaled.
import ctypes

print("reading address 0")
ctypes.string_at(0)
