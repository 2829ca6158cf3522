from dil.cli import main

if __name__ == "__main__":  # not when a worker process (Dask, multiprocessing) imports it as its main module
    raise SystemExit(main())
