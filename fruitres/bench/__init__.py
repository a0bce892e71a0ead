"""Benchmarks of the project against the tutorial's loop: `python -m fruitres.bench MODE`
(docs/performance.md).

cli.py              the command line: a subcommand per mode, each mode's options from its module
throughput.py       training and evaluation images per second at equal work
                    (`python -m fruitres.bench throughput`, `make bench`)
time_to_accuracy.py wall time to a validation accuracy, from a transferred backbone and from random init
                    (`python -m fruitres.bench tta --target 0.95`, `make bench-tta`)
tutorial.py         the tutorial's recipe and loop, which both compare against
clock.py            the callback that times a project run's validations and stops it at its target
report.py           the time-to-accuracy table, CSV and curves (PNG)
peers.py            Test accuracy against wall time beside fastai's fine_tune and the tutorial, each run in
                    its own process (`python -m fruitres.bench peers`, `make bench-peers`)
peer_inputs.py      what the peers share: one weights file in a temporary torch cache, one split file
fastai_peer.py      one fastai fine_tune run (`python -m fruitres.bench.fastai_peer`; extra `peers`)
tutorial_peer.py    one run of the tutorial's loop (`python -m fruitres.bench.tutorial_peer`)
peers_report.py     the peers table, CSV, JSON and figure (PNG)
"""
