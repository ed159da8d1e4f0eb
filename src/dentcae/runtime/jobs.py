"""Run a table's training jobs on one device in this process, or on several at once.

    summaries = run_jobs(fn, cfgs, devices=[None])        # CPU, one after another, here
    summaries = run_jobs(fn, cfgs, devices=[0, 1, 2, 3])  # four GPUs: one worker process per device

`fn(cfg, device)` trains and evaluates one run; results come back in the order of `cfgs`. Workers
are spawned (a fresh interpreter each, so no CUDA state is inherited), each takes one device for its
lifetime, and each job goes to the next free worker.
"""
import multiprocessing

_device = None          # the device of this worker process


def _take_device(queue):
    global _device
    _device = queue.get()


def _call(job):
    fn, cfg = job
    return fn(cfg, _device)


def run_jobs(fn, cfgs, devices):
    """[fn(cfg, device) for cfg in cfgs], on len(devices) devices at once. The cfgs' prepared data
    must exist already (run_table prepares it first): workers that find a shared cache entry being
    built fail at once on its lock rather than wait."""
    if len(devices) <= 1:
        return [fn(cfg, devices[0] if devices else None) for cfg in cfgs]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        for device in devices:
            queue.put(device)
        with ctx.Pool(len(devices), initializer=_take_device, initargs=(queue,)) as pool:
            return pool.map(_call, [(fn, cfg) for cfg in cfgs], chunksize=1)
