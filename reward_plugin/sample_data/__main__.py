"""Print the path of the bundled hh-rlhf sample."""

from . import HH_RLHF_SAMPLE

print(HH_RLHF_SAMPLE)
