#!/usr/bin/env python3
"""Writes one phase of the phased workload stream as an image folder (docs/benchmarks.md, "Caches made for one phase").

The phase's popular classes take 90 % of the rows with Zipf weights 1/rank (the first listed is the most popular), the
other classes share the rest evenly, as `gati bench workload --stream phased` draws a phase's requests. Rows are drawn
without replacement from each class of the source folder (`gati images`), seeded, and linked (not copied) into
OUTPUT/train/<class>/ and OUTPUT/test/<class>/. Class indices are those of the sorted class folder names, as
`--dataset images` numbers them (0 = the first folder in ordinal order).
"""
import argparse
import os
import random
import sys


def weights(classes, popular, share):
    zipf = sum(1 / rank for rank in range(1, len(popular) + 1))
    result = [(1 - share) / (classes - len(popular))] * classes
    for rank, c in enumerate(popular):
        result[c] = share / (rank + 1) / zipf
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="image folder with train/ and test/ class sub-folders")
    parser.add_argument("--output", required=True, help="folder to create (must not exist)")
    parser.add_argument("--popular", required=True, help="popular class indices, most popular first, e.g. 2,8,9")
    parser.add_argument("--train", type=int, default=5000, help="training-split rows")
    parser.add_argument("--test", type=int, default=1000, help="test-split rows")
    parser.add_argument("--share", type=float, default=0.9, help="the popular classes' share")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if os.path.exists(args.output):
        sys.exit(f"{args.output} exists: choose a new folder")
    classes = sorted(os.listdir(os.path.join(args.source, "train")))
    popular = [int(c) for c in args.popular.split(",")]
    if len(set(popular)) != len(popular) or any(c < 0 or c >= len(classes) for c in popular) or len(popular) >= len(classes):
        sys.exit(f"--popular: distinct indices in 0..{len(classes) - 1}, fewer than the {len(classes)} classes")
    if not 0 < args.share <= 1:
        sys.exit("--share: in (0, 1]")
    w = weights(len(classes), popular, args.share)
    rng = random.Random(args.seed)
    for split, rows in (("train", args.train), ("test", args.test)):
        pools = [sorted(os.listdir(os.path.join(args.source, split, name))) for name in classes]
        for files in pools:
            rng.shuffle(files)
        counts = [0] * len(classes)
        for _ in range(rows):
            u, c = rng.random(), 0
            while c < len(w) - 1 and u >= w[c]:
                u -= w[c]
                c += 1
            counts[c] += 1
        for c, name in enumerate(classes):
            if counts[c] > len(pools[c]):
                sys.exit(f"{split}/{name}: {counts[c]} rows wanted, {len(pools[c])} there")
            target = os.path.join(args.output, split, name)
            os.makedirs(target)
            for f in pools[c][:counts[c]]:
                os.symlink(os.path.abspath(os.path.join(args.source, split, name, f)), os.path.join(target, f))
        print(split, ", ".join(f"{name} {n}" for name, n in zip(classes, counts)))

if __name__ == "__main__":
    main()
