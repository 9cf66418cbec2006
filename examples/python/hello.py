# expect: ok
# stdout: Hello, world!
#
# The smallest Python program. It runs with the engine's own interpreter,
# isolated (-I) and unbuffered (-u), so output appears as soon as it is printed.
print("Hello, world!")
