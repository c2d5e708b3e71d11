// PIXL's panel in Orthanc Explorer: what this server is doing for PIXL, on the
// home page, so that an operator inspecting studies sees the pipeline's state.
$('#lookup').live('pagebeforeshow', function () {
  $('#pixl-panel').remove();
  var panel = $('<div id="pixl-panel" style="margin:0 0 1em 0;padding:0.5em 1em;' +
                'border:1px solid #bbb;border-radius:6px"><h3 style="margin:0.3em 0">PIXL</h3>' +
                '<div id="pixl-health">…</div><table id="pixl-extracts" ' +
                'style="border-collapse:collapse;margin-top:0.5em"></table></div>');
  $('#lookup [data-role="content"]').first().prepend(panel);
  $.ajax({ url: '../pixl/health', dataType: 'json', cache: false,
    success: function (h) {
      $('#pixl-health').text(h.service + ' ' + h.version + ': database ' + h.database +
                             ', schema ' + h.schema_version + (h.healthy ? ', healthy' : ', NOT HEALTHY'));
    },
    error: function () { $('#pixl-health').text('the PIXL plugin does not answer'); } });
  $.ajax({ url: '../pixl/extracts', dataType: 'json', cache: false,
    success: function (answer) {
      var table = $('#pixl-extracts');
      table.append('<tr><th style="text-align:left;padding-right:1em">project / extract</th>' +
                   '<th style="text-align:left">studies by state</th></tr>');
      $.each(answer.extracts || [], function (_, e) {
        var counts = $.map(e.counts, function (n, state) { return n + ' ' + state; }).join(', ');
        var row = $('<tr><td style="padding-right:1em"></td><td></td></tr>');
        row.children().eq(0).text(e.project + ' / ' + e.extract);
        row.children().eq(1).text(counts);
        table.append(row);
      });
    } });
});
