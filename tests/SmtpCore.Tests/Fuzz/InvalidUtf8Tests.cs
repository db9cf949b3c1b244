using System.Buffers;
using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Fuzz;

// Found by the hostile-input end-to-end tests: an address with invalid UTF-8 (with SMTPUTF8) was
// accepted as U+FFFD and would have been relayed changed. From the wire bytes to the path parser.
public class InvalidUtf8Tests
{
    private static bool Accepts(byte[] line, out string error)
    {
        var reader = new SequenceReader<byte>(new ReadOnlySequence<byte>(line));
        Assert.Equal(ParseStatus.Complete, SmtpCommandParser.TryParse(ref reader, 512, out var command));
        return PathArgumentParser.TryParse(command.Argument, "FROM:", allowNull: true, out _, out error);
    }

    [Theory]
    [InlineData(new byte[] { 0xff, 0xfe })]              // never UTF-8
    [InlineData(new byte[] { 0xc0, 0xaf })]              // overlong '/'
    [InlineData(new byte[] { 0xed, 0xa0, 0x80 })]        // a surrogate
    [InlineData(new byte[] { 0xf4, 0x90, 0x80, 0x80 })]  // past U+10FFFF
    [InlineData(new byte[] { 0xc3 })]                    // truncated
    public void Invalid_UTF8_in_an_address_is_refused(byte[] bad)
    {
        byte[] line = [.. "MAIL FROM:<a"u8, .. bad, .. "@client.test> SMTPUTF8\r\n"u8];
        Assert.False(Accepts(line, out string error), "accepted");
        Assert.Contains("UTF-8", error);
    }

    [Fact]
    public void Valid_UTF8_in_an_address_is_accepted()
    {
        Assert.True(Accepts("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\n"u8.ToArray(), out string error), error);
    }
}
