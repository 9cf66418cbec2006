# expect: ok
# stdout: read back {'language': 'python', 'runs': 3}
# stdout: files here: ['data.json']
#
# File I/O in the run's private working directory (empty at the start, deleted
# at the end): write a JSON file, list the directory, read the file back.
import json
import os

with open("data.json", "w") as f:
    json.dump({"language": "python", "runs": 3}, f)

print("files here:", sorted(name for name in os.listdir(".") if name.endswith(".json")))

with open("data.json") as f:
    print("read back", json.load(f))
