using System.Threading.Channels;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Quarantine;

// Where quarantine copies are written: the session awaits the returned task, which completes once
// the entry is on disk (both files and the folder fsync'd) or faults with an IOException.
internal interface IQuarantineWriter
{
    Task<QuarantineEntry> AddAsync(QuarantineStore store, QuarantineEntry entry, IMessageContent message);
}

// One long-running thread writes every copy, in arrival order: its fsyncs block that thread only,
// never the thread pool's. The queue is bounded; when it is full a session waits (asynchronously)
// for room.
internal sealed class QuarantineWriter : IQuarantineWriter, IDisposable
{
    private readonly Channel<Request> _requests = Channel.CreateBounded<Request>(
        new BoundedChannelOptions(64) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly Thread _thread;

    public QuarantineWriter()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "quarantine-writer" };
        _thread.Start();
    }

    // The process's writer, shared by every gateway context (they are rebuilt on reload).
    public static QuarantineWriter Shared { get; } = new();

    public async Task<QuarantineEntry> AddAsync(QuarantineStore store, QuarantineEntry entry, IMessageContent message)
    {
        var written = new TaskCompletionSource<QuarantineEntry>(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await _requests.Writer.WriteAsync(new Request(store, entry, message, written)).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new IOException("the quarantine writer has stopped");
        }

        return await written.Task.ConfigureAwait(false);
    }

    public void Dispose()
    {
        _requests.Writer.TryComplete();
        _thread.Join();
    }

    private void Run()
    {
        var reader = _requests.Reader;
        // Blocking here is the point: this thread is the one that waits for the disk.
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            while (reader.TryRead(out var request))
            {
                try
                {
                    request.Written.SetResult(request.Store.Add(request.Entry, request.Message));
                }
                catch (Exception e)
                {
                    // Any failure keeps the session's answer a 451 (or a reject without a copy), never a crash.
                    request.Written.SetException(e as IOException ?? new IOException(e.Message, e));
                }
            }
        }
    }

    private sealed record Request(QuarantineStore Store, QuarantineEntry Entry, IMessageContent Message, TaskCompletionSource<QuarantineEntry> Written);
}
