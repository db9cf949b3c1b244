using Portcullis.SmtpCore.Protocol;
using Xunit;

namespace Portcullis.SmtpCore.Tests.Protocol;

public class SmtpPathTests
{
    [Fact]
    public void Null_reverse_path_is_allowed_only_where_asked_for()
    {
        Assert.True(SmtpPath.TryParse("<>", allowNull: true, out var path, out _));
        Assert.True(path.IsNull);
        Assert.Equal("<>", path.ToString());
        Assert.False(SmtpPath.TryParse("<>", allowNull: false, out _, out string error));
        Assert.NotEmpty(error);
    }

    [Theory]
    [InlineData("<postmaster>")]
    [InlineData("<Postmaster>")]
    [InlineData("<POSTMASTER>")]
    public void Bare_postmaster_is_a_recipient_but_not_a_sender(string text)
    {
        // RFC 5321 §4.5.1
        Assert.True(SmtpPath.TryParse(text, allowNull: false, out var path, out _));
        Assert.True(path.IsPostmaster);
        Assert.Equal(text[1..^1], path.LocalPart);
        Assert.Equal("", path.Domain);
        Assert.False(path.IsNull);
        Assert.False(SmtpPath.TryParse(text, allowNull: true, out _, out _));
    }

    [Fact]
    public void Postmaster_at_a_domain_is_an_ordinary_mailbox()
    {
        Assert.True(SmtpPath.TryParse("<postmaster@example.org>", false, out var path, out _));
        Assert.False(path.IsPostmaster);
        Assert.Equal("postmaster@example.org", path.Mailbox);
    }

    [Theory]
    [InlineData("<user@example.org>", "user", "example.org")]
    [InlineData("<first.last+tag@sub.example.org>", "first.last+tag", "sub.example.org")]
    [InlineData("<!#$%&'*+-/=?^_`{|}~@example.org>", "!#$%&'*+-/=?^_`{|}~", "example.org")]
    [InlineData("<user@example.org.>", "user", "example.org.")]
    [InlineData("<user@a-b.example>", "user", "a-b.example")]
    [InlineData("<\"john doe\"@example.org>", "\"john doe\"", "example.org")]
    [InlineData("<\"a@b\"@example.org>", "\"a@b\"", "example.org")]
    [InlineData("<\"quote\\\"d\"@example.org>", "\"quote\\\"d\"", "example.org")]
    [InlineData("<\"a>b\"@example.org>", "\"a>b\"", "example.org")]
    [InlineData("<user@[192.0.2.1]>", "user", "[192.0.2.1]")]
    [InlineData("<user@[IPv6:2001:db8::1]>", "user", "[IPv6:2001:db8::1]")]
    [InlineData("<user@[ipv6:::1]>", "user", "[ipv6:::1]")]
    [InlineData("<user@[255.255.255.255]>", "user", "[255.255.255.255]")]
    [InlineData("<user@[IPv6:::ffff:192.0.2.1]>", "user", "[IPv6:::ffff:192.0.2.1]")]
    [InlineData("<jösé@exämple.org>", "jösé", "exämple.org")]
    public void Parses_mailboxes(string text, string local, string domain)
    {
        Assert.True(SmtpPath.TryParse(text, allowNull: false, out var path, out string error), error);
        Assert.Equal(local, path.LocalPart);
        Assert.Equal(domain, path.Domain);
        Assert.Null(path.SourceRoute);
        Assert.Equal(text, path.ToString());
    }

    [Theory]
    [InlineData("<user@example.org>", true)]
    [InlineData("<jösé@example.org>", false)]
    [InlineData("<user@exämple.org>", false)]
    public void Knows_whether_a_mailbox_needs_SMTPUTF8(string text, bool ascii)
    {
        Assert.True(SmtpPath.TryParse(text, false, out var path, out _));
        Assert.Equal(ascii, path.IsAscii);
    }

    [Theory]
    [InlineData("<@relay.example:user@example.org>", "@relay.example")]
    [InlineData("<@a.example,@b.example:user@example.org>", "@a.example,@b.example")]
    public void Source_routes_are_parsed_kept_and_never_written_back(string text, string route)
    {
        // RFC 5321 §4.1.2 / Appendix C: accepted, exposed for policy, dropped on output.
        Assert.True(SmtpPath.TryParse(text, false, out var path, out string error), error);
        Assert.Equal(route, path.SourceRoute);
        Assert.Equal("user", path.LocalPart);
        Assert.Equal("example.org", path.Domain);
        Assert.Equal("<user@example.org>", path.ToString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("<")]
    [InlineData(">")]
    [InlineData("user@example.org")]
    [InlineData("<user@example.org")]
    [InlineData("user@example.org>")]
    [InlineData("<user>")]
    [InlineData("<user@>")]
    [InlineData("<@example.org>")]
    [InlineData("<user@@example.org>")]
    [InlineData("<a@b@example.org>")]
    [InlineData("<.user@example.org>")]
    [InlineData("<user.@example.org>")]
    [InlineData("<us..er@example.org>")]
    [InlineData("<us er@example.org>")]
    [InlineData("<us(er@example.org>")]
    [InlineData("<user@exa mple.org>")]
    [InlineData("<user@-example.org>")]
    [InlineData("<user@example-.org>")]
    [InlineData("<user@example..org>")]
    [InlineData("<user@.>")]
    [InlineData("<user@exa_mple.org>")]
    [InlineData("<\"unterminated@example.org>")]
    [InlineData("<\"bad\\\"@example.org>")]
    [InlineData("<\"ctl\x01\"@example.org>")]
    [InlineData("<user@[192.0.2]>")]
    [InlineData("<user@[192.0.2.256]>")]
    [InlineData("<user@[2001:db8::1]>")]
    [InlineData("<user@[IPv6:192.0.2.1]>")]
    [InlineData("<user@[not-an-ip]>")]
    [InlineData("<user@[IPv6:fe80::1%eth0]>")]   // no zone index in IPv6-addr (RFC 5321 §4.1.3)
    [InlineData("<user@[0x7f.0.0.1]>")]          // Snum is decimal
    [InlineData("<user@[192.0.2.1 ]>")]
    [InlineData("<user@[IPv6:2001:db8::1/64]>")]
    [InlineData("<user@[]>")]
    [InlineData("<@relay.example user@example.org>")]
    [InlineData("<@:user@example.org>")]
    [InlineData("<@relay..example:user@example.org>")]
    [InlineData("<@a.example,b.example:user@example.org>")]
    [InlineData("<@a.example,:user@example.org>")]
    [InlineData("<@[192.0.2.1]:user@example.org>")]
    public void Refuses_bad_syntax(string text)
    {
        Assert.False(SmtpPath.TryParse(text, allowNull: true, out _, out string error), $"{text} was accepted");
        Assert.NotEmpty(error);
    }

    [Fact]
    public void Refuses_overlong_parts()
    {
        // RFC 5321 §4.5.3.1.1-2: 64 octets of local-part, 255 of domain.
        Assert.True(SmtpPath.TryParse($"<{new string('a', 64)}@example.org>", false, out _, out _));
        Assert.False(SmtpPath.TryParse($"<{new string('a', 65)}@example.org>", false, out _, out _));
        Assert.False(SmtpPath.TryParse($"<user@{new string('a', 64)}.org>", false, out _, out _));
        string longDomain = string.Join('.', Enumerable.Repeat(new string('a', 63), 4)); // 255 characters
        Assert.True(SmtpPath.TryParse($"<user@{longDomain}>", false, out _, out _));
        Assert.False(SmtpPath.TryParse($"<user@a{longDomain}>", false, out _, out _));
    }
}

public class PathArgumentParserTests
{
    private static PathArgument Parse(string argument, string prefix = "FROM:", bool allowNull = true)
    {
        Assert.True(PathArgumentParser.TryParse(argument, prefix, allowNull, out var result, out string error), error);
        return result;
    }

    private static string Refuse(string argument, string prefix = "FROM:", bool allowNull = true)
    {
        Assert.False(PathArgumentParser.TryParse(argument, prefix, allowNull, out _, out string error), $"{argument} was accepted");
        Assert.NotEmpty(error);
        return error;
    }

    [Theory]
    [InlineData("FROM:<a@b.example>")]
    [InlineData("from:<a@b.example>")]
    [InlineData("From: <a@b.example>")] // the common extra space
    [InlineData("FROM:  <a@b.example>")]
    public void Accepts_the_prefix_in_any_case_with_optional_space(string argument)
    {
        var result = Parse(argument);
        Assert.Equal("a@b.example", result.Path.Mailbox);
        Assert.Empty(result.Parameters);
    }

    [Fact]
    public void Null_reverse_path_and_postmaster()
    {
        Assert.True(Parse("FROM:<>").Path.IsNull);
        Assert.True(Parse("FROM:<> BODY=8BITMIME").Path.IsNull);
        Refuse("TO:<>", "TO:", allowNull: false);
        Assert.True(Parse("TO:<Postmaster>", "TO:", allowNull: false).Path.IsPostmaster);
    }

    [Fact]
    public void Parameters_keep_their_order_upper_case_keys_and_raw_values()
    {
        var result = Parse("FROM:<a@b.example> SIZE=12345 body=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159");
        Assert.Equal(
            [new("SIZE", "12345"), new("BODY", "8BITMIME"), new("SMTPUTF8", null), new("RET", "HDRS"), new("ENVID", "QQ314159")],
            result.Parameters);
    }

    [Fact]
    public void Recipient_parameters_NOTIFY_and_ORCPT()
    {
        var result = Parse("TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example", "TO:", false);
        Assert.Equal([new("NOTIFY", "SUCCESS,FAILURE"), new("ORCPT", "rfc822;c@d.example")], result.Parameters);
    }

    [Fact]
    public void Extra_spaces_between_parameters_are_tolerated()
    {
        var result = Parse("FROM:<a@b.example>   SIZE=1    BODY=7BIT");
        Assert.Equal(2, result.Parameters.Count);
    }

    [Fact]
    public void Quoted_local_part_may_hold_the_characters_that_end_a_path()
    {
        var result = Parse("FROM:<\"a> b\"@c.example> SIZE=5");
        Assert.Equal("\"a> b\"", result.Path.LocalPart);
        Assert.Equal([new("SIZE", "5")], result.Parameters);
    }

    [Theory]
    [InlineData("TO:<a@b.example>")]          // wrong prefix
    [InlineData("FROM <a@b.example>")]
    [InlineData("FROM:a@b.example")]
    [InlineData("FROM:<a@b.example")]
    [InlineData("FROM:")]
    [InlineData("")]
    [InlineData("FROM:<a@b.example>SIZE=10")]  // no space before parameters
    [InlineData("FROM:<a@b.example> =10")]
    [InlineData("FROM:<a@b.example> -SIZE=10")]
    [InlineData("FROM:<a@b.example> SI_ZE=10")]
    [InlineData("FROM:<a@b.example> SIZE=1=0")]
    [InlineData("FROM:<a@b.example> SIZE=")]     // esmtp-value is 1*(...), RFC 5321 §4.1.2
    [InlineData("FROM:<a@b.example> SIZE=\x01")]
    [InlineData("FROM:<a@b.example> SIZE=\x7f")]
    [InlineData("FROM:<bad path@b.example>")]
    public void Refuses_bad_arguments(string argument) => Refuse(argument);
}
