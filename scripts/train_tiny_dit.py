"""Train the tiny DiT: ``python -m blockdance_lab.zoo.train dit`` under its old name.

The recipe is ``RECIPE`` in ``blockdance_lab/zoo/dit/tiny.py``; without flags this reproduces
the shipped weights. The sidecar records this script as the command.
"""

from blockdance_lab.zoo.train import alias

main = alias("dit", "scripts/train_tiny_dit.py")

if __name__ == "__main__":
    main()
