"""``pyro-bdl selfcheck | info | tune``: the commands of ``triton-kernels``, mounted as they are.

Their arguments, checks and output are :data:`triton_kernels.cli.COMMANDS`; nothing is copied.
"""

from triton_kernels.cli import COMMANDS

selfcheck = COMMANDS["selfcheck"]
info = COMMANDS["info"]
tune = COMMANDS["tune"]
