using Portcullis.SmtpCore;

namespace Portcullis.Appliance.Messages;

// A read-only, seekable Stream over message content that is read at offsets (a MessageBuffer, a
// spliced message), so MimeKit can parse it without a copy of the whole message.
public sealed class ContentStream(IMessageContent content) : Stream
{
    private long _position;

    // Every byte of the content into destination (a quarantine or queue file); IOException when
    // the content ends before its Length, so a short copy is never stored as the message.
    public static void CopyWhole(IMessageContent content, Stream destination)
    {
        var buffer = new byte[64 * 1024];
        long offset = 0;
        while (offset < content.Length)
        {
            var n = content.Read(offset, buffer);
            if (n <= 0) throw new IOException($"the message ended at {offset} of {content.Length} bytes");
            destination.Write(buffer, 0, n);
            offset += n;
        }
    }

    public override bool CanRead => true;
    public override bool CanSeek => true;
    public override bool CanWrite => false;
    public override long Length => content.Length;

    public override long Position
    {
        get => _position;
        set => _position = value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value));
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var n = content.Read(_position, buffer);
        _position += n;
        return n;
    }

    public override long Seek(long offset, SeekOrigin origin)
    {
        Position = origin switch
        {
            SeekOrigin.Begin => offset,
            SeekOrigin.Current => _position + offset,
            _ => content.Length + offset,
        };
        return _position;
    }

    public override void Flush()
    {
    }

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
