"""The errors a dataset on disk can raise; the command line prints them as one-line messages."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where it was looked for and could not be downloaded."""


class DatasetCorruptedError(OSError):
    """A dataset's files are there but damaged: a checksum, the format, a size or a label is wrong."""
