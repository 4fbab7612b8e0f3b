"""What a process tree uses: its memory at rest, and CPU over a stretch of time."""

from __future__ import annotations


def tree_memory(pid: int) -> tuple[int, float, float]:
    """Processes, PSS and RSS (MB) of a process and all its descendants."""
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    pss = rss = 0.0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
    return len(procs), pss / 1e6, rss / 1e6


class CpuUse:
    """CPU seconds from start to `stop()`: the whole machine's (every process, idle and
    I/O waits left out), and one process tree's, its root apart from its descendants."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self._machine = self._busy()
        self._tree = self._by_process()
        self.text = ""

    @staticmethod
    def _busy() -> float:
        import psutil

        times = psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _by_process(self) -> dict[int, float]:
        import psutil

        seconds: dict[int, float] = {}
        for proc in [self._root, *self._root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            seconds[proc.pid] = times.user + times.system
        return seconds

    def stop(self, wall_s: float) -> str:
        machine = self._busy() - self._machine
        now = self._by_process()
        root = now.get(self._root.pid, 0.0) - self._tree.get(self._root.pid, 0.0)
        rest = sum(v - self._tree.get(pid, 0.0) for pid, v in now.items() if pid != self._root.pid)
        self.text = (
            f"CPU: machine {machine:.0f} s ({machine / wall_s:.2f} cores busy), "
            f"main process {root:.0f} s, its child processes {rest:.0f} s"
        )
        return self.text
