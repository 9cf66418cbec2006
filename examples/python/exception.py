# expect: runtime_error
# stdout: dividing
# message: status 1
#
# An uncaught exception: Python prints the traceback on stderr and exits with
# status 1, so the status is runtime_error.
def ratio(a, b):
    return a / b


print("dividing")
print(ratio(1, 0))
