"""`emorec convert`: a ChatGLM2/3 checkpoint to a native GLM one. The parser only: the work is imported when it
runs, so that building emorec's parser stays light."""

from __future__ import annotations


def register(sub) -> None:
    c = sub.add_parser(
        "convert", help="convert a ChatGLM2/3 checkpoint into a standard transformers GLM checkpoint",
        description="Read a ChatGLM2-6B / ChatGLM3-6B folder (or hub id, downloaded without its code files) and "
                    "write DST: config.json (model_type glm), safetensors shards and a fast tokenizer, loadable by "
                    "stock GlmForCausalLM / AutoTokenizer. No file of the checkpoint is executed; pickled .bin "
                    "shards are read with torch.load(weights_only=True). Example: emorec convert THUDM/chatglm2-6b "
                    "models/chatglm2-6b-glm")
    c.add_argument("src", help="ChatGLM2/3 checkpoint folder or hub id")
    c.add_argument("dst", help="output folder (must be new or empty)")
    c.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="weights' dtype in DST (auto: the checkpoint's torch_dtype)")
    c.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from emorec.model.convert import convert

    family = convert(args.src, args.dst, dtype=args.dtype, max_shard_size=args.max_shard_size,
                     overwrite=args.overwrite, show_progress=not args.no_progress)
    print(f"{args.src} ({family}) -> {args.dst}: model_type glm, load it with GlmForCausalLM.from_pretrained")
    return 0
