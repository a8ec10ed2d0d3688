"""Checkpoint interop, Python side: reads a file written by save-and-load.ts with the safetensors
library (numpy) or, failing that, PyTorch, and prints the same per-tensor summary, so the two sides
can be compared line by line. Writes from-python.safetensors next to it (the reverse direction).

Usage: python3 read.py path/to/ffn.safetensors
Exit status 3 (with the reason on stderr) when neither library is importable.
"""
import sys


def main(path):
    try:
        from safetensors.numpy import load_file, save_file
        tensors = load_file(path)
        to_list = lambda a: a
        lib = "safetensors"
    except ImportError as e1:
        try:
            import torch
            from safetensors.torch import load_file, save_file  # noqa: F401 (torch alone cannot read it)
            tensors = load_file(path)
            lib = "safetensors.torch"
        except ImportError as e2:
            sys.stderr.write(f"neither safetensors ({e1}) nor PyTorch with safetensors ({e2}) is importable\n")
            return 3
    with open(path, "rb") as f:
        import json, struct
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    for name in header:
        if name == "__metadata__":
            continue
        a = tensors[name]
        total = float(a.astype("float64").sum()) if lib == "safetensors" else float(a.double().sum())
        shape = ", ".join(str(s) for s in a.shape)
        print(f"tensor {name} {header[name]['dtype']} [{shape}] sum {total:.6f}")
    print(f"metadata note: {header.get('__metadata__', {}).get('note')}")
    print(f"read with {lib}")
    out = path.replace(".safetensors", "") + "-from-python.safetensors"
    save_file({k: tensors[k] for k in tensors}, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
