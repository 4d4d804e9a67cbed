cd /work/main
K="test_learner_learns_from_a_random_backbone or test_a_few_sgd_steps or test_learns_on_the_synthetic or test_training_learns_far_beyond"
for t in 1 2; do
  ONEDNN_MAX_CPU_ISA=ALL OMP_NUM_THREADS=$t /usr/bin/time -v .venv/bin/python -m pytest -q -n 0 -p no:cacheprovider tests/test_asnet.py tests/test_crcnet.py tests/test_hsnet.py tests/test_mce.py tests/test_vat.py -k "$K" --junitxml=/tmp/m/learners-avx512-omp$t.xml > /tmp/m/learners-avx512-omp$t.log 2>&1
done
date > /tmp/m/learners.done
