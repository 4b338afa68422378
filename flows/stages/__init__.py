"""One module per stage, each with `run(cfg, home, out, inputs) -> manifest`.

`cfg` is the `PipelineConfig`, `home` the artifact root, `out` the stage's output `Artifact`
and `inputs` the done `Artifact`s of the stages it reads (see `mediswift.graph.STAGE_INPUTS`).
A stage module submits its tasks (one per unit of work), waits for them, then writes
`out`'s manifest last.
"""
