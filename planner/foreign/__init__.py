"""Training configs people already have, read into fitplan's inputs (`fitplan estimate --from FILE`, `fitplan plan
--from FILE`): an axolotl YAML, a LLaMA-Factory YAML, TRL or Transformers Trainer arguments (JSON or YAML), an
Accelerate config YAML and a DeepSpeed JSON.

`api` reads the files and combines them; `load` parses a file and tells its tool from its keys; one module per
tool (`axolotl`, `llamafactory`, `trainer`, `accelerate`, `deepspeed`) maps its keys; `shared` and `fsdp` hold the
rules several tools share and `core` the mapping they all write into; `keys` lists the keys each tool knows."""
