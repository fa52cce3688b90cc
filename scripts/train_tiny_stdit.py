"""Train the tiny STDiT: ``python -m blockdance_lab.zoo.train stdit`` under its old name.

The recipe is ``RECIPE`` in ``blockdance_lab/zoo/stdit/tiny.py``; without flags this reproduces
the shipped weights. The sidecar records this script as the command.
"""

from blockdance_lab.zoo.train import alias

main = alias("stdit", "scripts/train_tiny_stdit.py")

if __name__ == "__main__":
    main()
