namespace Portcullis.EndToEnd.Harness;

// An append-only record of things that happened (messages received, RSETs, closed connections,
// log lines) that a test can wait on with a timeout instead of sleeping.
public sealed class EventLog<T>
{
    private readonly object gate = new();
    private readonly List<T> items = [];
    private readonly List<(Func<IReadOnlyList<T>, bool> Condition, TaskCompletionSource Done)> waiters = [];

    public void Add(T item)
    {
        List<TaskCompletionSource> satisfied = [];
        lock (gate)
        {
            items.Add(item);
            waiters.RemoveAll(w =>
            {
                if (!w.Condition(items))
                {
                    return false;
                }

                satisfied.Add(w.Done);
                return true;
            });
        }

        foreach (var done in satisfied)
        {
            done.TrySetResult();
        }
    }

    public IReadOnlyList<T> Snapshot()
    {
        lock (gate)
        {
            return items.ToArray();
        }
    }

    public int Count
    {
        get
        {
            lock (gate)
            {
                return items.Count;
            }
        }
    }

    // Completes as soon as `condition` holds for everything recorded so far (perhaps at once).
    public async Task<IReadOnlyList<T>> WaitUntilAsync(Func<IReadOnlyList<T>, bool> condition, TimeSpan timeout, string what)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (gate)
        {
            if (condition(items))
            {
                return items.ToArray();
            }

            waiters.Add((condition, done));
        }

        var finished = await Task.WhenAny(done.Task, Task.Delay(timeout));
        if (finished != done.Task)
        {
            lock (gate)
            {
                waiters.RemoveAll(w => w.Done == done);
            }

            throw new TimeoutException(
                $"Timed out after {timeout.TotalSeconds:0.#}s waiting for {what}; recorded so far ({Count}):\n  " +
                string.Join("\n  ", Snapshot().Select(i => i?.ToString())));
        }

        return Snapshot();
    }

    public async Task<T> WaitForAsync(Func<T, bool> match, TimeSpan timeout, string what)
    {
        var seen = await WaitUntilAsync(all => all.Any(match), timeout, what);
        return seen.First(match);
    }

    public Task<IReadOnlyList<T>> WaitForCountAsync(int count, TimeSpan timeout, string what) =>
        WaitUntilAsync(all => all.Count >= count, timeout, what);
}
