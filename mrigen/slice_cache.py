"""Decoded datasets cached as .npy files, so that a second run skips the decoding.

A set is stored under its key (data.fingerprint of its files and options) as
slices_<key>.npy, subjects_<key>.npy and origins_<key>.npy (the index of
each slice's file), written atomically and read with allow_pickle=False.
"""

import logging
import os
from typing import Callable

import numpy as np


def cached(load: Callable[[], tuple], cache_dir: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slices, subjects, file indices) from the cache folder, or decoded by `load` and stored there as .npy."""
    if not cache_dir:
        return load()
    cache_dir = os.path.expanduser(cache_dir)
    paths = [os.path.join(cache_dir, f"{kind}_{key}.npy") for kind in ("slices", "subjects", "origins")]
    if all(os.path.exists(path) for path in paths):
        try:
            arrays = [np.load(path, allow_pickle=False) for path in paths]
            if len({len(array) for array in arrays}) == 1:
                return tuple(arrays)
        except (OSError, ValueError):
            pass
        logging.warning("%s: unreadable cache file, decoding the data again", paths[0])
    arrays = load()
    try:
        os.makedirs(cache_dir, exist_ok=True)
        for path, array in zip(paths, arrays):
            temporary = f"{path}.{os.getpid()}.tmp"
            with open(temporary, "wb") as f:
                np.save(f, array, allow_pickle=False)
            os.replace(temporary, path)
    except OSError as e:
        logging.warning("could not cache the decoded data in %s: %s", cache_dir, e)
    return arrays
