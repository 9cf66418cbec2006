# expect: ok
# stdout: title: A Sandboxed Python Program
# stdout: vowels: 7
# stdout: héllo wörld -> 11 characters, 13 bytes
#
# Strings: methods, f-strings, slicing, and Unicode (the output is UTF-8).
text = "a sandboxed python program"
print("title:", text.title())
print("vowels:", sum(ch in "aeiou" for ch in text))
print("reversed words:", " ".join(reversed(text.split())))
print(f"{'centered':*^20}")
word = "héllo wörld"
print(f"{word} -> {len(word)} characters, {len(word.encode())} bytes")
