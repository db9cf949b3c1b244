using Portcullis.NativeScan;
using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Messages;

// Message content made of ranges of an original message and new bytes between them, read at
// offsets like the original. Strip and tag use it so that every byte they do not change reaches
// the downstream exactly as the client sent it, without copying the message.
public sealed class SplicedContent : IMessageContent, IScanSource
{
    private readonly List<(long Start, long Length, long SourceOffset, byte[]? Bytes)> _pieces = [];
    private readonly IMessageContent _source;

    public SplicedContent(IMessageContent source) => _source = source;

    public long Length { get; private set; }

    public SplicedContent AppendSource(long offset, long length)
    {
        if (length > 0)
        {
            _pieces.Add((Length, length, offset, null));
            Length += length;
        }

        return this;
    }

    public SplicedContent AppendBytes(byte[] bytes)
    {
        if (bytes.Length > 0)
        {
            _pieces.Add((Length, bytes.Length, 0, bytes));
            Length += bytes.Length;
        }

        return this;
    }

    // The source with `replacements` (start, end, new bytes; sorted, not overlapping) put in.
    public static SplicedContent Replace(IMessageContent source, IEnumerable<(long Start, long End, byte[] Bytes)> replacements)
    {
        var spliced = new SplicedContent(source);
        long at = 0;
        foreach (var (start, end, bytes) in replacements)
        {
            if (start < at || end < start || end > source.Length)
            {
                throw new ArgumentException($"replacement [{start}, {end}) overlaps or is outside the message", nameof(replacements));
            }

            spliced.AppendSource(at, start - at).AppendBytes(bytes);
            at = end;
        }

        return spliced.AppendSource(at, source.Length - at);
    }

    public int Read(long offset, Span<byte> destination)
    {
        var done = 0;
        var index = Find(offset);
        while (index < _pieces.Count && done < destination.Length)
        {
            var (start, length, sourceOffset, bytes) = _pieces[index];
            var within = offset + done - start;
            var count = (int)Math.Min(length - within, destination.Length - done);
            if (bytes is not null)
            {
                bytes.AsSpan((int)within, count).CopyTo(destination[done..]);
            }
            else
            {
                var read = 0;
                while (read < count)
                {
                    var n = _source.Read(sourceOffset + within + read, destination.Slice(done + read, count - read));
                    if (n <= 0) throw new IOException($"the original message ended early at {sourceOffset + within + read}");
                    read += n;
                }
            }

            done += count;
            index++;
        }

        return done;
    }

    private int Find(long offset)
    {
        int low = 0, high = _pieces.Count - 1;
        while (low <= high)
        {
            var mid = (low + high) / 2;
            var (start, length, _, _) = _pieces[mid];
            if (offset < start) high = mid - 1;
            else if (offset >= start + length) low = mid + 1;
            else return mid;
        }

        return _pieces.Count;
    }
}

// Bytes in memory as message content (notifications, tests).
public sealed class BytesContent(byte[] bytes) : IMessageContent
{
    public long Length => bytes.Length;

    public int Read(long offset, Span<byte> destination)
    {
        if (offset >= bytes.Length) return 0;
        var n = (int)Math.Min(destination.Length, bytes.Length - offset);
        bytes.AsSpan((int)offset, n).CopyTo(destination);
        return n;
    }
}
