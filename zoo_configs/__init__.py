"""The zoo configs, shipped inside the installed package as ``brickzoo.zoo_configs``.

Each ``*.yaml`` file here (and in sub-folders) is a recipe that ``brickzoo train NAME`` finds by
its name; ``brickzoo list`` lists them. A ``zoo_configs/`` folder in the current directory is
searched first, so a copy of a config there, edited, shadows the shipped one.
"""
