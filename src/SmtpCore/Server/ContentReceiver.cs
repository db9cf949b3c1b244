// The content receiver of the server session: DATA (RFC 5321 §4.1.1.4, §4.5.2) and BDAT
// (CHUNKING, RFC 3030). The content goes through DataReader (dot-unstuffing, bare CR/LF,
// size cap) into the buffer the handler opened; the handler sees the message only when it
// arrived whole and clean. A disconnect mid-content delivers nothing. A BDAT chunk is always
// read in full, even when refused, so the next command is found (RFC 3030 §2). Content must
// keep arriving (DataPace): a stalled or trickling client gets 421 4.4.2.
using System.Buffers;
using Portcullis.SmtpCore.Protocol;
using System.Runtime.CompilerServices;

namespace Portcullis.SmtpCore.Server;

public sealed partial class SmtpSession
{
    private bool _usedBdat;
    private DataReader? _bdat;

    private static readonly SmtpReply DataAfterBdat = new(503, "5.5.1", "DATA after BDAT");
    private static readonly SmtpReply BdatSyntax = new(501, "5.5.4", "Syntax: BDAT size [LAST]");
    private static readonly SmtpReply BdatUnavailable = new(502, "5.5.1", "BDAT not available");

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask DataAsync(SmtpCommand command)
    {
        var tx = Transaction!;
        SmtpReply? refusal =
            _usedBdat ? DataAfterBdat
            : tx.Recipients.Count == 0 ? Replies.NoRecipients
            : null;
        if (refusal is not null)
        {
            ClientError(refusal);
            return;
        }

        var content = OpenContent(tx);
        if (content is null) return;
        var data = new DataReader(content, _options.MaxMessageSize, _options.BareNewline, dotTransparency: true);
        Write(Replies.StartData);
        await _output.FlushAsync(_shutdown).ConfigureAwait(false);

        var pace = new DataPace(_options);
        while (!data.IsComplete)
        {
            var read = await ReadAsync(pace.NextTimeout(data.Size), "message data").ConfigureAwait(false);
            if (read is null) { _closing = true; return; }
            var buffer = read.Value.Buffer;
            long consumed = 0;
            foreach (var segment in buffer)
            {
                consumed += data.Process(segment.Span);
                if (data.IsComplete) break;
            }
            _input.AdvanceTo(buffer.GetPosition(consumed));
            if (!data.IsComplete && read.Value.IsCompleted)
            {
                _closing = true; // disconnect mid-DATA: nothing is delivered
                return;
            }
            if (!data.IsComplete) await ContentArrivedAsync(tx, data).ConfigureAwait(false);
        }
        await FinishMessageAsync(tx, data).ConfigureAwait(false);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask BdatAsync(SmtpCommand command)
    {
        if (!TryParseBdat(command.Argument, out long size, out bool last))
        {
            // Without a size we cannot find the next command: answer and close (RFC 3030 §2).
            Write(BdatSyntax);
            _closing = true;
            return;
        }

        var tx = Transaction;
        SmtpReply? refusal =
            !_options.Chunking ? BdatUnavailable
            : tx is null ? Replies.MailBeforeBdat
            : tx.Recipients.Count == 0 ? Replies.NoRecipients
            : null;

        DataReader? reader = null;
        if (refusal is null)
        {
            if (_bdat is null)
            {
                var content = OpenContent(tx!);
                if (content is null) refusal = Replies.LocalError;
                else _bdat = new DataReader(content, _options.MaxMessageSize, _options.BareNewline, dotTransparency: false);
                _usedBdat = true;
            }
            reader = _bdat;
        }

        long remaining = size;
        var pace = new DataPace(_options);
        while (remaining > 0)
        {
            var read = await ReadAsync(pace.NextTimeout(size - remaining), "BDAT chunk").ConfigureAwait(false);
            if (read is null) { _closing = true; return; }
            var buffer = read.Value.Buffer;
            var take = buffer.Slice(0, Math.Min(remaining, buffer.Length));
            if (reader is not null)
                foreach (var segment in take) reader.Process(segment.Span);
            remaining -= take.Length;
            _input.AdvanceTo(take.End);
            if (remaining > 0 && read.Value.IsCompleted) { _closing = true; return; }
            if (reader is not null && !(last && remaining == 0)) await ContentArrivedAsync(tx!, reader).ConfigureAwait(false);
        }

        if (refusal is not null)
        {
            if (tx is not null && refusal.Code != 503) await AbortTransactionAsync().ConfigureAwait(false);
            // RFC 3030 §2: chunks pipelined after a failed one are accepted and discarded, not counted as errors.
            if (tx is null && _usedBdat)
            {
                Write(refusal);
                if (last) _usedBdat = false; // the failed message is over; a new stray BDAT counts again
            }
            else ClientError(refusal);
            return;
        }
        if (last)
        {
            reader!.Finish();
            await FinishMessageAsync(tx!, reader).ConfigureAwait(false);
            return;
        }
        if (reader!.Error != DataError.None)
        {
            // Latched: refuse now, and every later chunk finds no transaction.
            tx!.ContentRefusal = ErrorReply(reader);
            Write(tx.ContentRefusal);
            await AbortTransactionAsync().ConfigureAwait(false);
            return;
        }
        WriteChunkReceived(size);
    }

    // "250 2.0.0 <size> octets received", straight into the output: one per chunk.
    private void WriteChunkReceived(long size)
    {
        var span = _output.GetSpan(64);
        "250 2.0.0 "u8.CopyTo(span);
        int n = 10;
        size.TryFormat(span[n..], out int digits, provider: System.Globalization.CultureInfo.InvariantCulture);
        n += digits;
        " octets received\r\n"u8.CopyTo(span[n..]);
        _output.Advance(n + 18);
    }

    // "size [LAST]" (RFC 3030 §2): size is 1*DIGIT, LAST case-insensitive, spaces between.
    private static bool TryParseBdat(string argument, out long size, out bool last)
    {
        var parts = argument.AsSpan();
        size = 0;
        last = false;
        Span<Range> ranges = stackalloc Range[3];
        int n = parts.Split(ranges, ' ', StringSplitOptions.RemoveEmptyEntries);
        if (n is 0 or > 2) return false;
        if (n == 2)
        {
            if (!parts[ranges[1]].Equals("LAST", StringComparison.OrdinalIgnoreCase)) return false;
            last = true;
        }
        return long.TryParse(parts[ranges[0]], System.Globalization.NumberStyles.None, null, out size);
    }

    private IBufferWriter<byte>? OpenContent(SmtpTransaction tx)
    {
        try
        {
            tx.Content = _handler.OpenContent(this, tx);
            return tx.Content;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Report(tx, "content", e);
            Write(Replies.LocalError);
            return null;
        }
    }

    // Tells the handler more content is in (not after the content broke a rule, nor after the
    // handler failed at it once).
    private ValueTask ContentArrivedAsync(SmtpTransaction tx, DataReader data)
    {
        if (data.Error != DataError.None || tx.ContentHandlerFailed) return ValueTask.CompletedTask;
        ValueTask told;
        try
        {
            told = _handler.OnContentArrivedAsync(this, tx, _shutdown);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            ContentHandlerFailed(tx, e);
            return ValueTask.CompletedTask;
        }
        return told.IsCompletedSuccessfully ? ValueTask.CompletedTask : AwaitContentArrivedAsync(tx, told);
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask AwaitContentArrivedAsync(SmtpTransaction tx, ValueTask told)
    {
        try
        {
            await told.ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            ContentHandlerFailed(tx, e);
        }
    }

    private void ContentHandlerFailed(SmtpTransaction tx, Exception e)
    {
        Report(tx, "content", e);
        tx.ContentHandlerFailed = true;
    }

    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask FinishMessageAsync(SmtpTransaction tx, DataReader data)
    {
        if (data.Error != DataError.None)
        {
            tx.ContentRefusal = ErrorReply(data);
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(tx.ContentRefusal);
            return;
        }
        if (tx.ContentHandlerFailed)
        {
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(Replies.LocalError);
            return;
        }
        SmtpReply reply;
        try
        {
            reply = await _handler.OnMessageAsync(this, tx, _shutdown).ConfigureAwait(false);
        }
        catch (Exception e) when (HandlerFailed(e))
        {
            Report(tx, "message", e);
            await AbortTransactionAsync().ConfigureAwait(false);
            Write(Replies.LocalError);
            return;
        }
        Transaction = null;
        _bdat = null;
        Write(reply);
    }

    private static SmtpReply ErrorReply(DataReader data) => data.Error switch
    {
        DataError.TooLarge => Replies.TooLarge,
        DataError.BareNewline => Replies.BareNewline,
        _ => Replies.NoStorage,
    };
}

// Content must keep arriving: each read within DataTimeout (RFC 5321 §4.5.3.2.5), and the
// whole transfer within DataTimeout plus the time MinDataRate allows for what has arrived
// (as Postfix's smtpd_min_data_rate), so a client trickling bytes cannot hold a session.
internal readonly struct DataPace(SmtpServerOptions options)
{
    private readonly long _started = System.Diagnostics.Stopwatch.GetTimestamp();

    public TimeSpan NextTimeout(long received)
    {
        var allowed = options.DataTimeout + TimeSpan.FromSeconds((double)received / options.MinDataRate);
        var left = allowed - System.Diagnostics.Stopwatch.GetElapsedTime(_started);
        if (left <= TimeSpan.Zero) return TimeSpan.FromTicks(1);
        return left < options.DataTimeout ? left : options.DataTimeout;
    }
}
