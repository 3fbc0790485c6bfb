"""Prebuilt zoo entries shipped inside the package: one sub-folder per entry, named as the entry.

Each sub-folder is an entry folder as :func:`brickzoo.zoo.publish_pretrained` writes it
(``card.json``, ``config.yaml``, ``weights/``, ``checksums.sha256``, ``README.md``);
:func:`brickzoo.zoo.list_pretrained` lists them and ``load_pretrained("<name>")`` loads one.
Only small models are shipped; a card may instead give the ``url`` its weights are hosted at.
"""
