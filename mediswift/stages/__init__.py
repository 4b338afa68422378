"""Every stage in one shape, with no orchestrator in sight (see `mediswift.units`).

A stage module says which units the stage has (`*_units(cfg, inputs)`: typed specs whose keys
hash exactly what each unit reads), how one unit runs (`run_*(spec, home)`), and how the units'
results become the stage manifest (`collect(...)`). The Prefect flows only submit the specs and
wait; everything here runs, and is tested, without a server.
"""
