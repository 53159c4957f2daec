"""`spec-vla-write-miniature DIR`: writes the embedded miniature OpenVLA (vla/miniature.py) as a
real OpenVLA HF directory with vla/checkpoint.write_checkpoint (sharded safetensors + index,
dataset_statistics.json, preprocessor_config.json, tokenizer); `--as-openvla` makes it a stand-in
for a real checkpoint."""
from __future__ import annotations

from pathlib import Path

from ..vla.constants import MINIATURE_SEED
from .arguments import ArgumentParser


def main(argv=None) -> None:
    parser = ArgumentParser(prog="spec-vla-write-miniature",
                            description="Write the embedded miniature OpenVLA in the real HF directory format.")
    parser.add_argument("directory", type=Path, help="a new (or empty) directory")
    parser.add_argument("--seed", type=int, default=MINIATURE_SEED)
    parser.add_argument("--max-shard-size", default="20MB")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of the written weights (the released OpenVLA checkpoints are bfloat16)")
    parser.add_argument("--as-openvla", action="store_true",
                        help="leave the miniature's name out of config.json: the directory then stands in for a "
                             "real OpenVLA checkpoint (named after the directory; packaged drafts are refused)")
    args = parser.parse_args(argv)
    if args.directory.exists() and (not args.directory.is_dir() or any(args.directory.iterdir())):
        parser.error(f"{args.directory} exists and is not empty; name a new directory (a checkpoint written over "
                     "another would mix their files)")
    from ..vla.checkpoint import DTYPES, write_checkpoint
    from ..vla.miniature import build_miniature

    path = write_checkpoint(build_miniature(args.seed), args.directory, args.max_shard_size, DTYPES[args.dtype],
                            args.as_openvla)
    kind = "a real-format stand-in (config.json does not name the miniature)" if args.as_openvla else "the miniature"
    print(f"wrote miniature OpenVLA (seed {args.seed}, {args.dtype}) to {path} as {kind}")


if __name__ == "__main__":
    main()
