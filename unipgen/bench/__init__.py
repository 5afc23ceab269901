"""The benchmarks: what unipgen's operations cost, each figure beside a baseline run in the same
process. `unipgen bench NAME` runs one and prints its result; docs/benchmarks.md reports them.

One module per benchmark, each with a `run(quick=False, ...)` that returns the result as a dict:
`memory` (with `vectors`), `usermodel`, `recommend`, `generation` (with `training`), `media`,
`voice`, `bestof`, `preference`, `textpersonalization`, `orchestrator`, `service` and
`hardening` (both with `live_service`; hardening with `upload_corpus`). The quality protocols
live in `unipgen.eval`; the benchmarks that report them (`usermodel`, `textpersonalization`)
call them there. `stages` is the loop their `run`s share.

The layer above everything but the CLI: a benchmark may drive the store, the user model, the
backends, the orchestrator, the eval harnesses and the service; nothing else imports it.
Importing this package loads nothing heavy; each module loads what it measures.
"""
