from ablations.cli import run

run()
