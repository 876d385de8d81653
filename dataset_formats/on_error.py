"""What reading raw rows does with a row it cannot use: the ``on_error`` modes and their one default.

Every place that reads raw rows uses :data:`DEFAULT_ON_ERROR`: ``reward-plugin convert --on-error``,
:func:`dataset_formats.conversion.convert` and ``encode_rows``, a runner ``train_data``/``eval_data``
mapping's ``on_error``, ``RewardConfig.dataset_on_error`` and Axolotl's ``reward_on_error``.
"""

from __future__ import annotations

#: ``raise``: the first bad row stops the run with one line naming it. ``skip``: bad rows are
#: counted by reason (and written to the rejects file where there is one).
ON_ERROR_CHOICES = ("raise", "skip")
#: A row that cannot be used is a question for the user, not something to drop quietly; real
#: datasets convert whole under it.
DEFAULT_ON_ERROR = "raise"
