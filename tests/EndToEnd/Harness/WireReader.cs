using System.Text;

namespace Portcullis.EndToEnd.Harness;

// Buffered reads of SMTP wire units from a stream: command/reply lines, a DATA body up to
// CRLF.CRLF (RFC 5321 §4.1.1.4), and exact byte counts for BDAT (RFC 3030). Bytes read past
// the unit stay buffered for the next call, which is what makes pipelined input work.
public sealed class WireReader(Stream stream)
{
    private const int MaxLine = 64 * 1024;
    private readonly byte[] buffer = new byte[128 * 1024];
    private int start;
    private int end;

    // One line without its terminator; LF alone also ends a line (lenient on purpose: a test server
    // that accepts more command syntax detects more smuggling). Null at end of stream.
    public async Task<string?> ReadLineAsync(CancellationToken cancel)
    {
        while (true)
        {
            var lf = Array.IndexOf(buffer, (byte)'\n', start, end - start);
            if (lf >= 0)
            {
                var length = lf - start;
                if (length > 0 && buffer[lf - 1] == '\r')
                {
                    length--;
                }

                var line = Encoding.Latin1.GetString(buffer, start, length);
                start = lf + 1;
                return line;
            }

            if (end - start >= MaxLine)
            {
                throw new InvalidDataException($"line longer than {MaxLine} bytes");
            }

            if (!await FillAsync(cancel))
            {
                return null;
            }
        }
    }

    // A DATA body: everything up to the first CRLF "." CRLF, with dot-stuffing removed. Only that
    // exact sequence ends the body; bare LF or CR never count as line ends. Null at end of stream.
    public async Task<byte[]?> ReadDataAsync(CancellationToken cancel)
    {
        var raw = new MemoryStream();
        var state = DataState.LineStart; // the DATA command's own CRLF starts the first line
        while (true)
        {
            for (var i = start; i < end; i++)
            {
                state = Next(state, buffer[i]);
                if (state == DataState.End)
                {
                    raw.Write(buffer, start, i + 1 - start);
                    start = i + 1;
                    var withoutDot = raw.GetBuffer().AsSpan(0, (int)raw.Length - 3); // drop ".\r\n"
                    return SmtpBytes.Unstuff(withoutDot);
                }
            }

            raw.Write(buffer, start, end - start);
            start = end;
            if (!await FillAsync(cancel))
            {
                return null;
            }
        }
    }

    public async Task<byte[]?> ReadExactAsync(int count, CancellationToken cancel)
    {
        var result = new byte[count];
        var filled = 0;
        while (filled < count)
        {
            if (start == end && !await FillAsync(cancel))
            {
                return null;
            }

            var n = Math.Min(count - filled, end - start);
            Buffer.BlockCopy(buffer, start, result, filled, n);
            start += n;
            filled += n;
        }

        return result;
    }

    // Reads and discards until the peer closes; used by a server told to hang.
    public async Task DrainAsync(CancellationToken cancel)
    {
        start = end = 0;
        while (await FillAsync(cancel))
        {
            start = end = 0;
        }
    }

    private async Task<bool> FillAsync(CancellationToken cancel)
    {
        if (start > 0)
        {
            Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
            end -= start;
            start = 0;
        }

        if (end == buffer.Length)
        {
            throw new InvalidDataException("wire buffer full");
        }

        var n = await stream.ReadAsync(buffer.AsMemory(end), cancel);
        end += n;
        return n > 0;
    }

    private enum DataState { MidLine, AfterCr, LineStart, Dot, DotCr, End }

    private static DataState Next(DataState state, byte b) => (state, b) switch
    {
        (_, (byte)'\r') when state != DataState.Dot => DataState.AfterCr,
        (DataState.Dot, (byte)'\r') => DataState.DotCr,
        (DataState.AfterCr, (byte)'\n') => DataState.LineStart,
        (DataState.LineStart, (byte)'.') => DataState.Dot,
        (DataState.DotCr, (byte)'\n') => DataState.End,
        _ => DataState.MidLine,
    };
}
