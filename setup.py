"""Which packages the brickzoo distribution holds; the project's metadata lives in pyproject.toml.

The zoo configs stay in the top-level ``zoo_configs/`` folder, where users look for them, and
ship inside the package as ``brickzoo.zoo_configs`` (``package_dir`` maps that package onto the
folder; its sub-folders become namespace sub-packages), so an installed wheel finds them through
``importlib.resources``. The mapping cannot sit next to ``packages.find`` in pyproject.toml,
hence this file.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIGS = "brickzoo.zoo_configs"
CONFIG_FOLDERS = [CONFIGS] + [f"{CONFIGS}.{name}" for name in find_namespace_packages("zoo_configs")]
# the prebuilt zoo entries shipped in brickzoo/zoo/pretrained/<name>/ (see brickzoo.zoo.publish_pretrained)
PRETRAINED_FILES = ["*/card.json", "*/config.yaml", "*/checksums.sha256", "*/README.md", "*/weights/**/*.safetensors"]

setup(
    packages=[*find_packages(include=["brickzoo", "brickzoo.*"]), *CONFIG_FOLDERS],
    package_dir={CONFIGS: "zoo_configs"},
    package_data={
        "brickzoo": ["py.typed"],
        "brickzoo.zoo.pretrained": PRETRAINED_FILES,
        **{name: ["*.yaml"] for name in CONFIG_FOLDERS},
    },
)
