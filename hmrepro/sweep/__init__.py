"""``hmrepro sweep``: the work one of the paper's tables needs, as a plan of jobs, and the launchers that run it.

:mod:`.plan` turns a table's claimed rows (:mod:`hmrepro.reporting.claimed`) and what is on disk (result records,
run folders) into jobs (pure data, no printing); :mod:`.local` runs them on this machine and :mod:`.slurm` submits
them through submitit; :mod:`.folder` is the sweep folder both keep their bookkeeping and logs in.
"""
