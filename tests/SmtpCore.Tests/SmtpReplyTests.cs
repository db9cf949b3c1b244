using System.Text;
using Xunit;

namespace Portcullis.SmtpCore.Tests;

public class SmtpReplyTests
{
    // The wire bytes a reply is sent as are its text form, encoded once and kept.
    [Theory]
    [InlineData(250, "2.0.0", new[] { "OK" }, "250 2.0.0 OK\r\n")]
    [InlineData(250, null, new[] { "mx.test Hello c", "PIPELINING", "SIZE 10" }, "250-mx.test Hello c\r\n250-PIPELINING\r\n250 SIZE 10\r\n")]
    [InlineData(334, null, new string[0], "334 \r\n")]
    [InlineData(550, "5.1.1", new[] { "Usér unknown" }, "550 5.1.1 Usér unknown\r\n")]
    public void Wire_bytes_are_the_encoded_wire_form_and_are_made_once(int code, string? enhanced, string[] lines, string wire)
    {
        var reply = new SmtpReply(code, enhanced, lines);
        Assert.Equal(wire, reply.ToWire());
        Assert.Equal(Encoding.UTF8.GetBytes(wire), reply.WireBytes);
        Assert.Same(reply.WireBytes, reply.WireBytes);
    }

    // Written straight into the output the first time, from the kept bytes after: the same wire form.
    [Theory]
    [InlineData(250, "2.0.0", new[] { "OK" }, "250 2.0.0 OK\r\n")]
    [InlineData(250, null, new[] { "mx.test Hello c", "PIPELINING", "SIZE 10" }, "250-mx.test Hello c\r\n250-PIPELINING\r\n250 SIZE 10\r\n")]
    [InlineData(334, null, new string[0], "334 \r\n")]
    [InlineData(550, "5.1.1", new[] { "Usér unknown" }, "550 5.1.1 Usér unknown\r\n")]
    public void WriteTo_writes_the_wire_form_every_time(int code, string? enhanced, string[] lines, string wire)
    {
        var reply = new SmtpReply(code, enhanced, lines);
        var output = new System.Buffers.ArrayBufferWriter<byte>(1);
        reply.WriteTo(output);
        reply.WriteTo(output);
        reply.WriteTo(output);
        Assert.Equal(wire + wire + wire, Encoding.UTF8.GetString(output.WrittenSpan));
    }
}
