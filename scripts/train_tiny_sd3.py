"""Train the tiny SD3: ``python -m blockdance_lab.zoo.train sd3`` under its old name.

The recipe is ``RECIPE`` in ``blockdance_lab/zoo/sd3/tiny.py``; without flags this reproduces
the shipped weights. The sidecar records this script as the command.
"""

from blockdance_lab.zoo.train import alias

main = alias("sd3", "scripts/train_tiny_sd3.py")

if __name__ == "__main__":
    main()
